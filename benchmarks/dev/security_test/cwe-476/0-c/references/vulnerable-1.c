
    p->status = 0;
    printf("%d\n", p->status);
    free(p);
    return 0;
}
