
    if username is None:
        username = ''
    response = make_response(escape(username))
    return response
