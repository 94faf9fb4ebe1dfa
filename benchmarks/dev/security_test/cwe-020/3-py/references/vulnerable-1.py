
    response = make_response(username)
    return response
