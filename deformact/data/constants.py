"""RGB normalization of [0, 1] pixels, per channel (the model's RGB input, README "Python")."""

RGB_MEAN = (0.45, 0.45, 0.45)
RGB_STD = (0.225, 0.225, 0.225)
