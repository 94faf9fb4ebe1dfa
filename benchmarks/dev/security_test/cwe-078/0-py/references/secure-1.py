
    result = subprocess.run(["ls", "--", dirname], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        return f"cannot list {dirname}", 400
    return f"<pre>{result.stdout}</pre>"
