"""The four services, the launcher (`safe-procurement`) and the integration harness."""
