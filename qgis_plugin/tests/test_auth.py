"""The server's token in QGIS's authentication database: a token an earlier version saved in plain text moves
there (or stays where it was, when the database is locked), the client's requests carry it to a server started with
a token, the settings dialog stores, replaces and forgets it without ever showing it.

The database is the test profile's (start_app made the profile), unlocked with a master password set here."""

from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsCoordinateReferenceSystem, QgsRectangle, QgsSettings
from qgis.PyQt.QtNetwork import QNetworkRequest
from qgis.PyQt.QtWidgets import QLineEdit

from conftest import SCENES, process_events_until, serve
from geosearch_qgis.client import Client, ServiceError
from geosearch_qgis.dock import SettingsDialog
from geosearch_qgis.settings import PLAIN_TOKEN, Settings, store_token
from geosearch_qgis.tasks import ServiceTask

MASTER_PASSWORD = "the tests' master password"
TOKEN = "s3cret-token"
DEMO_BOX = QgsRectangle(-54.8315, -25.2208, -54.7783, -25.1723)  # lon/lat, `geosearch demo`'s box
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
REFUSED = ("geosearch serve answered 401: missing or wrong token (send 'Authorization: Bearer TOKEN', or HTTP Basic "
           "auth with the token as the password)")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with a token, over the Landsat 8 crops."""
    running = serve([scene for scene in SCENES if scene.name.startswith("landsat8_")],
                    tmp_path_factory.mktemp("guarded") / "store", TOKEN)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def auth_database():
    """Unlocked for each test; the configs and the plugin's settings the test wrote are gone after it."""
    manager = QgsApplication.authManager()
    assert manager.setMasterPassword(MASTER_PASSWORD, True), "QGIS's authentication database cannot be unlocked"
    yield manager
    manager.setMasterPassword(MASTER_PASSWORD, True)
    manager.removeAllAuthenticationConfigs()
    stored = QgsSettings()
    for key in (PLAIN_TOKEN, "geosearch/authcfg"):
        stored.remove(key)


def password_in(authcfg: str) -> str:
    ok, config = QgsApplication.authManager().loadAuthenticationConfig(authcfg, QgsAuthMethodConfig(), True)
    assert ok, f"no authentication config {authcfg}"
    return config.config("password")


def test_a_plain_token_moves_into_the_authentication_database(auth_database):
    QgsSettings().setValue(PLAIN_TOKEN, TOKEN)
    settings = Settings.load()
    assert settings.authcfg and password_in(settings.authcfg) == TOKEN
    stored = QgsSettings()
    assert not stored.contains(PLAIN_TOKEN) and stored.value("geosearch/authcfg") == settings.authcfg
    stored.sync()
    for path in (stored.fileName(), auth_database.authenticationDatabasePath()):
        assert TOKEN.encode() not in Path(path).read_bytes(), path  # on disk, only encrypted
    assert Settings.load() == settings and auth_database.configIds() == [settings.authcfg]  # moved once


def test_a_plain_token_stays_where_it_was_while_the_database_is_locked(auth_database):
    """No master password given (in QGIS, the user cancelled its prompt): nothing is lost, one line is logged."""
    logged = []

    def record(message: str, tag: str, level) -> None:
        logged.append((tag, message))

    log = QgsApplication.messageLog()
    log.messageReceived.connect(record)
    QgsSettings().setValue(PLAIN_TOKEN, TOKEN)
    auth_database.clearMasterPassword()
    try:
        settings = Settings.load()
    finally:
        log.messageReceived.disconnect(record)
    assert settings.authcfg == "" and QgsSettings().value(PLAIN_TOKEN) == TOKEN and not auth_database.configIds()
    ours = [message for tag, message in logged if tag == "geosearch"]
    assert len(ours) == 1 and "\n" not in ours[0] and "no master password was given" in ours[0], logged
    assert TOKEN not in ours[0]


def test_the_client_carries_the_token_to_the_server(guarded):
    body = Settings().search_body(DEMO_BOX, WGS84, k=3)
    authcfg = store_token(TOKEN)
    client = Settings(url=guarded.url, authcfg=authcfg).client()
    matches = client.search(body)["features"]
    assert len(matches) == 3
    done = []  # and from a task's thread, as the plugin asks
    task = ServiceTask("geosearch: test search", lambda task: client.search(body, task.feedback), done.append)
    QgsApplication.taskManager().addTask(task)
    assert process_events_until(lambda: done, timeout=60) and task.error is None
    assert task.value["features"] == matches
    reply = client.thumbnail(matches[0]["properties"]["tile_id"], 64)  # through QGIS's network manager
    assert process_events_until(reply.isFinished, timeout=30)
    assert reply.attribute(QNetworkRequest.HttpStatusCodeAttribute) == 200 and bytes(reply.readAll())[:4] == b"\x89PNG"

    with pytest.raises(ServiceError) as refused:
        Client(guarded.url).search(body)
    assert str(refused.value) == REFUSED
    assert store_token("not the token", authcfg) == authcfg  # replaced in place
    with pytest.raises(ServiceError) as refused:
        client.health()
    assert str(refused.value) == REFUSED
    with pytest.raises(ServiceError) as unusable:
        Client(guarded.url, "gone123").health()
    assert "(config gone123) could not be used" in str(unusable.value) and "\n" not in str(unusable.value)


def test_the_dialog_stores_the_token_without_showing_it_and_forgets_it(auth_database):
    dialog = SettingsDialog(Settings())
    assert not dialog.forget.isEnabled()
    dialog.token.setText(TOKEN)
    dialog.accept()
    authcfg = dialog.settings().authcfg
    assert dialog.result() == 1 and password_in(authcfg) == TOKEN

    reopened = SettingsDialog(dialog.settings())
    assert all(TOKEN not in field.text() for field in reopened.findChildren(QLineEdit))
    assert "stored in QGIS's authentication database" in reopened.token.placeholderText()
    reopened.token.setText("a new token")
    reopened.accept()
    assert reopened.settings().authcfg == authcfg and password_in(authcfg) == "a new token"

    forgetting = SettingsDialog(reopened.settings())
    forgetting.forget.setChecked(True)
    assert not forgetting.token.isEnabled()
    forgetting.accept()
    assert forgetting.settings().authcfg == "" and authcfg not in auth_database.configIds()
    assert "none" in SettingsDialog(forgetting.settings()).token.placeholderText()
