from geosearch.cli import main

main()
