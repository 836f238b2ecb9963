"""Small technical helpers shared by every service: settings, database, broker, outbox, inbox, retries."""
