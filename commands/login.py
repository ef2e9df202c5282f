"""`mistral login` / `mistral logout`: the Hugging Face token, kept where huggingface_hub keeps it (HF_HOME)."""

import sys

import typer

from mistralcli.commands._common import stderr_console


def login(
    token: str = typer.Option(
        None, "--token", help="The token (hf_...). Default: asked for on a terminal, else read from stdin."
    ),
):
    """Check a Hugging Face token with the hub and store it, for gated and private repos (pull, run -m org/name).

    Example: echo "$HF_TOKEN" | mistral login
    """
    from huggingface_hub import login as hub_login

    from mistralcli.errors import MistralError
    from mistralcli.loading.hub import _network_errors

    if token is None:
        if sys.stdin.isatty():
            import getpass

            token = getpass.getpass("Hugging Face token (https://huggingface.co/settings/tokens): ")
        else:
            token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise typer.BadParameter("no token given", param_hint="--token")
    try:
        hub_login(token=token, add_to_git_credential=False, skip_if_logged_in=False)
    except ValueError as exc:  # huggingface_hub's word for a token the hub refuses
        raise MistralError(f"the hub refused the token ({exc}); nothing was stored") from None
    except _network_errors() as exc:
        raise MistralError(
            f"the hub could not be reached to check the token ({type(exc).__name__}); nothing was stored"
        ) from None
    except Exception as exc:  # HfHubHTTPError and its kin
        raise MistralError(f"the token could not be checked: {exc}; nothing was stored") from None
    stderr_console().print("logged in: the token is stored for huggingface_hub", highlight=False)


def logout():
    """Remove the stored Hugging Face tokens (HF_TOKEN in the environment, if set, still applies).

    Example: mistral logout
    """
    from pathlib import Path

    from huggingface_hub import constants
    from huggingface_hub import logout as hub_logout

    console = stderr_console()
    stored = [Path(constants.HF_TOKEN_PATH), Path(constants.HF_STORED_TOKENS_PATH)]
    had = any(p.exists() for p in stored)
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # its "Not logged in!" is said here, once
    try:
        hub_logout()
    except OSError:  # the files are gone; a token in the environment remains
        console.print("note: HF_TOKEN is set in the environment and still applies", highlight=False)
    console.print(f"logged out: {stored[0]} removed" if had else "not logged in: no token is stored", highlight=False)
