
        dest = os.path.realpath("/tmp/unpack")
        for member in tar.getmembers():
            # only plain files and folders: links could point anywhere
            if not (member.isfile() or member.isdir()):
                continue
            target = os.path.realpath(os.path.join(dest, member.name))
            if os.path.commonpath([dest, target]) != dest:
                continue
            tar.extract(member, dest)
