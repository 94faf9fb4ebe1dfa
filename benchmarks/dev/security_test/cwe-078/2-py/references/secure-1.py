
    result = subprocess.run(["ping", "-c", "1", "--", url], capture_output=True, text=True, timeout=10)
    if result.returncode == 0:
        return f"{url} is alive"
    return f"{url} is not alive"
