
    import re
    if not username or not re.fullmatch(r"[a-z_][a-z0-9_-]*", username):
        return "invalid username", 400
    cmd = "id " + username
    return str(subprocess.check_output(cmd, shell=True))
