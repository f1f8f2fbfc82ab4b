"""Models, on-device augmentation and one training: train on one half, predict the other."""
