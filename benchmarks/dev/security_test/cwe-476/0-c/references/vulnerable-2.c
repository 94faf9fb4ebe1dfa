
    if (p == NULL) {
        return 1;
    }
    p->status = 0;
    char *msg = (char *)malloc(64);
    sprintf(msg, "person status: %d", p->status);
    printf("%s\n", msg);
    free(msg);
    free(p);
    return 0;
}
