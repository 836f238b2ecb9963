"""Applications service: owns the procurement case and its state machine."""
