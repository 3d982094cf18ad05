from localframe import allocator


def test_left_alone_when_user_configured():
    assert allocator.user_configured({}) is None
    assert allocator.user_configured({"PATH": "/bin"}) is None
    assert allocator.user_configured({"MALLOC_ARENA_MAX": "2"}) == "MALLOC_ARENA_MAX"
    assert allocator.user_configured({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}) == "GLIBC_TUNABLES"
    assert allocator.user_configured({"LD_PRELOAD": "libjemalloc.so"}) == "LD_PRELOAD"
    assert allocator.user_configured({"LOCALFRAME_ALLOCATOR": "default"}) == "LOCALFRAME_ALLOCATOR"
    assert allocator.user_configured({"LOCALFRAME_ALLOCATOR": "tuned"}) is None


def test_apply_default_respects_opt_out(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "tune", lambda: calls.append(1) or True)
    assert allocator.apply_default({"LOCALFRAME_ALLOCATOR": "default"}) is False
    assert allocator.apply_default({"MALLOC_TOP_PAD_": "0"}) is False
    assert calls == []
    assert allocator.apply_default({}) is True
    assert calls == [1]


def test_policies_apply_on_glibc():
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        import pytest
        pytest.skip("not glibc")
    # in a fresh interpreter, so the test process keeps its own allocator
    import subprocess
    import sys
    for policy in allocator.POLICIES:
        code = f"from localframe import allocator; assert allocator.tune({policy!r}) is True"
        assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_bounded_policy_keeps_large_blocks_mapped():
    # the commands' policy must not switch mapping off: large blocks go back to the system when freed
    settings = dict(allocator.POLICIES["bounded"])
    assert allocator._M_MMAP_MAX not in settings
    assert settings[allocator._M_MMAP_THRESHOLD] == 32 << 20
    assert 0 < settings[allocator._M_TRIM_THRESHOLD] < 1 << 30
