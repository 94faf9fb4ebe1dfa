
    cursor = db.cursor()
    cursor.execute("DELETE FROM users WHERE email = ?", (email,))
    db.commit()
    n = cursor.rowcount
    db.close()
    if n:
        return "unsubscribed"
    return "not subscribed"
