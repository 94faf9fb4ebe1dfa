
    cursor = db.cursor()
    cursor.execute("SELECT id FROM users WHERE email = :email", {"email": email})
    if cursor.fetchone() is None:
        db.close()
        return "not subscribed"
    cursor.execute("DELETE FROM users WHERE email = :email", {"email": email})
    db.commit()
    db.close()
    return "unsubscribed"
