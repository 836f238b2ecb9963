from services.loan_disbursement.config import Settings
from services.loan_disbursement.main import build_app
from services.runner import serve

if __name__ == "__main__":
    serve(build_app, Settings())
