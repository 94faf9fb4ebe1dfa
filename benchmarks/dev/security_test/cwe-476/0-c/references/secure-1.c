
    if (p == NULL) {
        fprintf(stderr, "malloc failed\n");
        return 1;
    }
    p->status = 0;
    printf("%d\n", p->status);
    free(p);
    return 0;
}
