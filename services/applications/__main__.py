from services.runner import serve
from services.applications.main import build_app
from services.applications.config import Settings

if __name__ == "__main__":
    serve(build_app, Settings())
