from safe_procurement.shared.kit.migrations import run_env

run_env()
