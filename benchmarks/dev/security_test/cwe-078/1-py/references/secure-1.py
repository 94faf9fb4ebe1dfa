
    result = subprocess.run(["getent", "passwd", username], capture_output=True, text=True)
    return str(result.stdout)
