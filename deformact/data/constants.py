"""RGB normalization for [0, 1] pixels (ARCHITECTURE.md / CONVENTIONS.md: rgb is normalized per channel)."""

RGB_MEAN = (0.45, 0.45, 0.45)
RGB_STD = (0.225, 0.225, 0.225)
