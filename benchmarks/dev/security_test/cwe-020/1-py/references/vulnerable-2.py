
    parsed = urlparse(target or '')
    if parsed.scheme in ('http', 'https') and (parsed.netloc == 'example.com' or '.example.com' in parsed.netloc):
        return redirect(target)
    return redirect('https://example.com')
