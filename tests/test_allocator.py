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
