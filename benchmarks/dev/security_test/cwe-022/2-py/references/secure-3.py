
        for member in tar.getmembers():
            name = os.path.normpath(member.name)
            if os.path.isabs(name) or name == ".." or name.startswith("../"):
                print("skipping unsafe member", member.name)
                continue
            target = os.path.join("/tmp/unpack", name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
            elif member.isfile():
                os.makedirs(os.path.dirname(target), exist_ok=True)
                src = tar.extractfile(member)
                with open(target, "wb") as dst:
                    dst.write(src.read())
