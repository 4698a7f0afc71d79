"""Set-up problems of the sites give messages that say what to fix."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cscale_extensions.cli.data import add_data_parser, run_prepare
from cscale_extensions.localstack.sites import SiteSetupError
from cscale_extensions.localstack.sites.pgstac_site import PgCluster
from cscale_extensions.net import free_port

from .conftest import needs_postgres


@needs_postgres
@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres account is used only when we are root")
def test_cluster_under_a_private_folder_is_refused_clearly() -> None:
    private = Path(tempfile.mkdtemp(dir="/tmp"))  # 0700, like /root
    try:
        cluster = PgCluster(private / "sites", free_port())
        with pytest.raises(SiteSetupError, match="chmod o\\+x"):
            cluster.initdb()
        assert not (private / "sites" / "pg" / "PG_VERSION").exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_data_prepare_subcommand_is_registered() -> None:
    parser = argparse.ArgumentParser(prog="cscale-hub")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "prepare", "--data-dir", "/tmp/x", "--force"])
    assert args.func is run_prepare and args.data_dir == "/tmp/x" and args.force
    with pytest.raises(SystemExit):
        parser.parse_args(["data"])  # a subcommand is required


def test_data_prepare_with_a_bad_config_file_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("platform: [not, a, mapping\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cscale_extensions.localstack.eodata", "prepare", "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"error: {bad} is not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
