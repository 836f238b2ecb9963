from services.console.app import build_app
from services.console.config import ConsoleSettings
from services.runner import serve

if __name__ == "__main__":
    serve(build_app, ConsoleSettings())
