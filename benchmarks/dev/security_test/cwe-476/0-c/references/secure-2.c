
    if (!p) {
        perror("malloc");
        exit(EXIT_FAILURE);
    }
    *p = (person){ .name = "", .status = 0 };
    printf("status: %d\n", p->status);
    free(p);
    p = NULL;
    return EXIT_SUCCESS;
}
