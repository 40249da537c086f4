"""The Streamlit settings that protect users: XSRF on, no usage statistics, an upload limit."""

import tomllib

from tests.conftest import REPO


def _config() -> dict:
    return tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())


def test_xsrf_protection_stays_on():
    assert _config()["server"]["enableXsrfProtection"] is True


def test_no_usage_statistics_are_sent():
    assert _config()["browser"]["gatherUsageStats"] is False


def test_uploads_have_a_size_limit():
    assert 1 <= _config()["server"]["maxUploadSize"] <= 500


def test_secrets_are_not_committed():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".streamlit/secrets.toml" in ignored
    assert (REPO / ".streamlit" / "secrets.toml.example").is_file()
