
        tar.extractall(path="/tmp/unpack")
