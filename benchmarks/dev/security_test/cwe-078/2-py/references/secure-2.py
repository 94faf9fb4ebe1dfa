
    import re
    if not url or not re.fullmatch(r"[A-Za-z0-9._-]+", url) or url.startswith("-"):
        return "invalid url", 400
    rc = subprocess.call("ping -c 1 " + url, shell=True)
    return "alive" if rc == 0 else "not alive"
