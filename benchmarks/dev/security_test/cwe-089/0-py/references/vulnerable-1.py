
    cursor = db.cursor()
    cursor.execute("DELETE FROM users WHERE email = '%s'" % email)
    db.commit()
    db.close()
    return "unsubscribed"
