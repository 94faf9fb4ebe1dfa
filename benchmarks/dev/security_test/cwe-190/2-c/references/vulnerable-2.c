
    unsigned int sum = 0;
    int i;
    for (i = 1; i <= 3; i++)
        sum += getMonthlySales(i);
    printf("The sum is %u\n", sum);
    return 0;
}
