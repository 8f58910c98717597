"""Time-step-aware calibration: calibration-input generation, activation statistics, range estimators, ranges file."""
