"""What the user sets once: where the server is and how to search. Kept in QgsSettings under `geosearch/`, but for
the server's token, which QGIS's authentication database keeps encrypted: QgsSettings holds only its config's id."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsMessageLog,
    QgsRectangle,
    QgsSettings,
)

from .client import Client
from .examples import Example, box_request

PREFIX = "geosearch/"
PLAIN_TOKEN = PREFIX + "token"  # where versions before the authentication database kept the token, in plain text
# QGIS 3.22 has no authentication method for a bare token; `geosearch serve` takes Basic auth's password as one.
AUTH_METHOD, AUTH_NAME, AUTH_USER = "Basic", "geosearch serve", "geosearch"


class AuthDatabaseError(Exception):
    """One line: why QGIS's authentication database could not take or give up the token."""


def export_folder() -> str:
    """Where the last export went, for the next one to start there (the home folder at first, not QGIS's own
    working directory)."""
    return QgsSettings().value(PREFIX + "export_folder", str(Path.home()), type=str)


def remember_export_folder(path: str) -> None:
    QgsSettings().setValue(PREFIX + "export_folder", str(Path(path).parent))


@dataclass
class Settings:
    url: str = "http://127.0.0.1:8765"
    authcfg: str = ""  # the QGIS authentication config that holds the server's token; empty for none
    k: int = 20
    dedup: bool = True
    after: str = ""  # ISO dates; empty means no bound
    before: str = ""

    @classmethod
    def load(cls) -> "Settings":
        stored = QgsSettings()
        values = {}
        for field in fields(cls):
            default = getattr(cls, field.name)
            values[field.name] = stored.value(PREFIX + field.name, default, type=type(default))
        settings = cls(**values)
        plain = stored.value(PLAIN_TOKEN, "", type=str)
        if plain:
            settings.move_plain_token(plain)
        return settings

    def save(self) -> None:
        stored = QgsSettings()
        for name, value in asdict(self).items():
            stored.setValue(PREFIX + name, value)

    def move_plain_token(self, token: str) -> None:
        """Move a token saved in plain text by an earlier version into the authentication database. When that
        fails (no master password given), the old setting stays, so that nothing is lost, and the plugin goes on
        without a token."""
        try:
            self.authcfg = store_token(token, self.authcfg)
        except AuthDatabaseError as error:
            QgsMessageLog.logMessage(f"the server's token stays in QGIS's settings in plain text for now: {error}",
                                     "geosearch", Qgis.Warning)
            return
        stored = QgsSettings()
        stored.setValue(PREFIX + "authcfg", self.authcfg)
        stored.remove(PLAIN_TOKEN)

    def client(self) -> Client:
        """A client for the server; the master password, if the token needs it, is asked for here, on the interface
        thread, as QGIS does before it opens a layer with an authentication config, not in a task's thread."""
        if self.authcfg:
            QgsApplication.authManager().setMasterPassword(True)
        return Client(self.url, self.authcfg)

    def search_body(self, box: QgsRectangle, crs: QgsCoordinateReferenceSystem, k: Optional[int] = None,
                    examples: Sequence[Example] = ()) -> dict:
        """The POST /search body: the examples' (examples_body), k and de-duplication."""
        return self.examples_body(box, crs, examples) | {"k": k or self.k, "dedup": self.dedup}

    def examples_body(self, box: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                      examples: Sequence[Example] = ()) -> dict:
        """What POST /search and POST /detect share: a box drawn in `crs`, the marked places as positives and
        negatives, and the date filters."""
        body = box_request(box, crs)
        for key, positive in (("positives", True), ("negatives", False)):
            chosen = [example.request for example in examples if example.positive == positive]
            if chosen:
                body[key] = chosen
        return body | self.dates()

    def dates(self) -> dict:
        """The acquisition dates the requests are limited to, as the server takes them (those set)."""
        return {key: value for key, value in (("after", self.after), ("before", self.before)) if value}


def store_token(token: str, authcfg: str = "") -> str:
    """Put `token` in QGIS's authentication database, encrypted with the master password (asked for if not given
    yet): in the config `authcfg` when it still exists, else in a new one. The config's id."""
    manager = QgsApplication.authManager()
    config = QgsAuthMethodConfig(AUTH_METHOD)
    config.setName(AUTH_NAME)
    config.setConfig("username", AUTH_USER)
    config.setConfig("password", token)
    if has_token(authcfg):
        config.setId(authcfg)
        stored = manager.updateAuthenticationConfig(config)
    else:
        stored, config = manager.storeAuthenticationConfig(config)
    if not stored:
        raise AuthDatabaseError(f"QGIS's authentication database did not take the token ({auth_database_state()})")
    return config.id()


def forget_token(authcfg: str) -> None:
    """Remove the config that holds the token, if it is still there."""
    if has_token(authcfg) and not QgsApplication.authManager().removeAuthenticationConfig(authcfg):
        raise AuthDatabaseError(f"QGIS's authentication database kept the token ({auth_database_state()})")


def has_token(authcfg: str) -> bool:
    """Whether the config `authcfg` exists; its secret stays encrypted, so no master password is needed."""
    return authcfg in QgsApplication.authManager().configIds()


def auth_database_state() -> str:
    """Why the authentication database may have refused a change, for the user."""
    manager = QgsApplication.authManager()
    if manager.isDisabled():
        return " ".join(manager.disabledMessage().split())  # one line
    if not manager.masterPasswordIsSet():
        return "no master password was given"
    return f"see the log's '{manager.authManTag()}' tab"
