"""`watcher auth ACCOUNT`: sign in once to an OAuth2 mailbox and store its token."""

from __future__ import annotations

import click

from watcher.cli.base import cli, config_of


@cli.command()
@click.argument("account_name", metavar="ACCOUNT")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Browser flow: the 127.0.0.1 port the sign-in redirects to (0 = any free port). Give one "
                   "to forward it over SSH.")
@click.option("--no-check", is_flag=True, help="Do not log in to the mailbox with the new token afterwards.")
@click.pass_context
def auth(ctx: click.Context, account_name: str, port: int, no_check: bool) -> None:
    """Sign in to an `auth = "oauth2"` account and store its refresh token (mode 0600, outside the config).

    The device flow (Microsoft 365; the default for custom providers) shows a code to enter at an address
    on any device, so it works on a headless server. The browser flow (Gmail) shows an address to open;
    the sign-in returns to http://127.0.0.1:PORT on this machine (from elsewhere:
    `ssh -L PORT:127.0.0.1:PORT server`). Afterwards the mailbox is logged in to once with the new token.

    \b
    Example:
        watcher auth us-store
        watcher auth gmail-store --port 8765
    """
    from watcher.errors import NotFound, OAuthError
    from watcher.imap import Mailbox
    from watcher.oauth import save_token
    from watcher.oauth_flows import browser_sign_in, poll_device_token, request_device_code

    config = config_of(ctx)
    account = next((entry for entry in config.accounts if entry.name == account_name), None)
    if account is None:
        raise NotFound(f"no account named {account_name!r} in {config.path}")
    oauth = account.oauth
    if oauth is None:
        raise OAuthError(f'{account.name} logs in with a password; set auth = "oauth2" and its oauth_* keys first')
    if oauth.flow == "device":
        authorization = request_device_code(oauth)
        click.echo(f"To let watcher read {account.username}, open {authorization.verification_uri}")
        click.echo(f"and enter the code {authorization.user_code}")
        if authorization.verification_uri_complete:
            click.echo(f"(or open {authorization.verification_uri_complete})")
        click.echo(f"Waiting for the sign-in (the code expires in {authorization.expires_in / 60:.0f} min) …")
        token = poll_device_token(oauth, authorization)
    else:
        def show(address: str, redirect: str) -> None:
            click.echo(f"To let watcher read {account.username}, open this address in a browser and sign in:")
            click.echo(f"  {address}")
            click.echo(f"Waiting for the sign-in to return to {redirect} …")

        token = browser_sign_in(oauth, show, port=port)
    if token.refresh_token is None:
        click.echo("Warning: the provider gave no refresh token; you will have to sign in again when the access "
                   "token expires (check the scope: offline_access for Microsoft)", err=True)
    save_token(oauth.token_file, token)
    click.echo(f"Token saved to {oauth.token_file} (mode 0600)")
    if not no_check:
        with Mailbox(account):
            click.echo(f"Logged in to {account.host}:{account.port} as {account.username}")
