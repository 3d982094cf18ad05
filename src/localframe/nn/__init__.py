"""Building blocks shared by every model: radial bases, cutoff envelopes, frames, scatter helpers."""
