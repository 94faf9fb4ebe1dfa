
    if not username:
        return make_response('missing username', 400)
    response = make_response('Profile of %s' % username)
    response.mimetype = 'text/plain'
    response.headers['X-Content-Type-Options'] = 'nosniff'
    return response
