"""``python -m tvlens.cli`` (what ``accelerate launch -m tvlens.cli`` runs)."""

from tvlens.cli.main import app

app()
