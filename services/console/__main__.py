from safe_procurement.services.console.app import build_app
from safe_procurement.services.console.config import ConsoleSettings
from safe_procurement.services.runner import serve

if __name__ == "__main__":
    serve(build_app, ConsoleSettings())
