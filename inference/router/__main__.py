"""`python -m inference.router --config FILE [--host H] [--port P]` (same as `dsdeploy route`)."""

import argparse
import sys

from inference.router.command import add_arguments, run_command

parser = argparse.ArgumentParser(prog="python -m inference.router", description="Run the dsdeploy router.")
add_arguments(parser)
sys.exit(run_command(parser.parse_args()))
