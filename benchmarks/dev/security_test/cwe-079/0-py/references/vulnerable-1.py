
    return f"<p>Hello, {username}!</p>"
