"""geosearch for QGIS: drag a box on the map, see the places in your archive that look like it. The plugin talks
to `geosearch serve` over HTTP and needs neither torch nor the geosearch package."""


def classFactory(iface):
    from .plugin import GeosearchPlugin

    return GeosearchPlugin(iface)
