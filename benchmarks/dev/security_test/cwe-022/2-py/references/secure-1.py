
        tar.extractall("/tmp/unpack", filter="data")
