from safe_procurement.services.loan_disbursement.config import Settings
from safe_procurement.services.loan_disbursement.main import build_app
from safe_procurement.services.runner import serve

if __name__ == "__main__":
    serve(build_app, Settings())
