from services.applications.config import Settings
from services.applications.main import build_app
from services.runner import serve

if __name__ == "__main__":
    serve(build_app, Settings())
