"""The SAFE eligibility engine: pure Python, no storage, no messaging. `engine.verify` is the entrypoint."""
