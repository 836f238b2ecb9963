"""Settings are respected everywhere: `.env` is read by pydantic-settings, and the launcher keeps an
explicit `<SERVICE>_PORT` instead of overwriting it."""

from __future__ import annotations

from pathlib import Path

from safe_procurement.services.applications.config import Settings as ApplicationsSettings
from safe_procurement.services.launcher import SERVICES, Launcher


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("APPLICATIONS_PORT", "APPLICATIONS_BATCH_SIZE", "SAFE_LOG_LEVEL", "APPLICATIONS_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".env").write_text("APPLICATIONS_PORT=9123\nAPPLICATIONS_BATCH_SIZE=7\nSAFE_LOG_LEVEL=DEBUG\n"
                                   "APPLICATIONS_DATABASE_URL=sqlite+aiosqlite:///x.db\n")
    s = ApplicationsSettings()
    assert (s.port, s.batch_size, s.log_level) == (9123, 7, "DEBUG")
    monkeypatch.setenv("APPLICATIONS_PORT", "9124")
    assert ApplicationsSettings().port == 9124


def test_the_launcher_keeps_an_explicit_service_port(tmp_path: Path):
    env = {"APPLICATIONS_PORT": "18555"}
    children = Launcher(var_dir=tmp_path, base_env=env, replicas={"applications": 2}, port_offset=40).plan()
    ports = {(c.service, c.replica): c.port for c in children}
    assert ports[("applications", 1)] == 18555
    assert ports[("applications", 2)] == 18655  # replicas keep the +100 convention
    assert ports[("partner_registry", 1)] == SERVICES["partner_registry"] + 40
    by_name = {c.name: c for c in children}
    assert by_name["applications#1"].env["APPLICATIONS_PORT"] == "18555"
    assert by_name["applications#1"].url == "http://127.0.0.1:18555"
