"""Origin verification service: decides each proposal against the SAFE rules (component origin, participation, contractors, design authority) and keeps a replica of the partner registry."""
