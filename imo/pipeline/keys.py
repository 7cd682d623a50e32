"""Who signs: every command that sends a transaction signs locally with eth-account, so it works with any JSON-RPC
provider (none of them unlock accounts). The key comes from an encrypted keystore file (`--keystore FILE`, its
password in $IMO_KEYSTORE_PASSWORD) or from $IMO_PRIVATE_KEY. On a development chain `--account N` is the default
mnemonic's key N, still signing locally; `--account 0xADDR` names an account the RPC node itself unlocks, which only a
development chain such as anvil does."""

import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from imo.errors import ImoError
from imo.fsutil import write_private

PRIVATE_KEY_ENV = "IMO_PRIVATE_KEY"
PASSWORD_ENV = "IMO_KEYSTORE_PASSWORD"


class KeyError_(ImoError):
    """No usable signing key."""


def load_signer(keystore: str | Path | None = None, account: str | None = None, default_index: int | None = None) -> LocalAccount | str:
    """A LocalAccount from `keystore` or $IMO_PRIVATE_KEY; else the development key `account` (an index) or
    `default_index`, or the unlocked address `account`. Raises one clear line when none is usable."""
    if keystore:
        path = Path(keystore)
        if not path.is_file():
            raise KeyError_(f"keystore {path} not found")
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise KeyError_(f"set ${PASSWORD_ENV} to the password of {path}")
        try:
            return Account.from_key(Account.decrypt(json.loads(path.read_text()), password))
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyError_(f"cannot decrypt keystore {path}: {str(exc) or 'malformed file'}") from None
    key = os.environ.get(PRIVATE_KEY_ENV)
    if key:
        try:
            return Account.from_key(key.strip())
        except (ValueError, TypeError):
            raise KeyError_(f"${PRIVATE_KEY_ENV} is not a 32-byte hex private key") from None
    if account:
        return dev_account(int(account)) if account.isdigit() else account
    if default_index is not None:
        return dev_account(default_index)
    raise KeyError_(f"no signing key: pass --keystore FILE (password in ${PASSWORD_ENV}) or set ${PRIVATE_KEY_ENV}")


#: anvil's (and hardhat's) default mnemonic: its accounts are funded on every development chain, and public
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def dev_account(index: int) -> LocalAccount:
    """Development account `index` of the default mnemonic, as a local key: it signs here, so even on a dev chain no
    command relies on an account the node unlocks."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def write_keystore(path: Path, private_key: str, password: str) -> str:
    """Encrypt a key into a keystore file (owner-only permissions); returns its address."""
    account = Account.from_key(private_key)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(Account.encrypt(account.key, password)))
    return account.address
