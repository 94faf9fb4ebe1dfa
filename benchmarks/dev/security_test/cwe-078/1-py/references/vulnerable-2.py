
    cmd = "grep '^%s:' /etc/passwd" % username
    p = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE)
    out, err = p.communicate()
    return str(out)
