"""The console's pages, one router per area; each is built from the console's `web.Console`."""
