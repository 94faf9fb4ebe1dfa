
        def is_within_directory(directory, target):
            abs_directory = os.path.abspath(directory)
            abs_target = os.path.abspath(target)
            prefix = os.path.commonprefix([abs_directory, abs_target])
            return prefix == abs_directory

        for member in tar.getmembers():
            member_path = os.path.join("/tmp/unpack", member.name)
            if not is_within_directory("/tmp/unpack", member_path):
                raise Exception("Attempted Path Traversal in Tar File")
        tar.extractall("/tmp/unpack")
