
    if username is None:
        username = ""
    return "<p>Hello, %s!</p>" % escape(username)
