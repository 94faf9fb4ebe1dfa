
    import shlex
    cmd = "ls " + shlex.quote(dirname)
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    return str(out)
