
    rc = subprocess.call('ping -c 1 "%s"' % url, shell=True)
    if rc == 0:
        return "URL is alive"
    return "URL is not alive"
